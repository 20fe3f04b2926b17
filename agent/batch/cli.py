"""`ncu-agent batch`: many problems, every GPU, resumable (docs/batch.md). Registered by agent/cli.py."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agent.commands import options as opt
from agent.commands.checks import checked, fail, new_dir
from agent.config import RunOptions

if TYPE_CHECKING:  # imported when the command runs: help pages and refusals should not wait for them
    from agent.batch.inputs import Budget, Execution
    from agent.commands.run_setup import RunPlan

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


# The command's own options, declared apart so that its signature stays a list of names.
PathsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Problem folders, KernelBench .py files, bundled problem names, or folders of those "
        "(a KernelBench level folder)."
    ),
]
ResumeOption = Annotated[
    Path | None, typer.Option(help="Finish the batch in this directory (after a kill, a crash...).")
]
OutOption = Annotated[Path | None, typer.Option(help="The batch directory (default runs/batch-TIME).")]
IncludeOption = Annotated[
    list[str] | None, typer.Option(help="Only problems whose name matches this glob (repeatable).")
]
ExcludeOption = Annotated[list[str] | None, typer.Option(help="Leave out matching problems (repeatable).")]
ListFileOption = Annotated[
    Path | None, typer.Option("--list", help="A file of problem names or globs, one a line.")
]
MaxEvaluationsOption = Annotated[
    int | None, typer.Option(help="Budget per problem: worker evaluations.", min=1)
]
BatchEvaluationsOption = Annotated[
    int | None, typer.Option(help="Budget of the whole batch: worker evaluations.", min=1)
]
TimeLimitOption = Annotated[
    float | None, typer.Option(help="Budget of the whole batch: minutes of wall time (resumes too).")
]
JobsOption = Annotated[
    int | None, typer.Option(help="Problems at once (default: one per GPU; on the CPU 1).", min=1)
]
GpusOption = Annotated[str | None, typer.Option("--gpus", help="GPU ids to use, e.g. 0,1 (default: all).")]
BackendOption = Annotated[
    str | None, typer.Option(help="local (this machine, the default) or ray (a Ray cluster).")
]
AddressOption = Annotated[str | None, typer.Option(help="Ray cluster address (default: a local instance).")]


@dataclass(frozen=True)
class BatchRequest:
    """What `ncu-agent batch` was asked, besides the run options it shares with `ncu-agent run`."""

    paths: list[str]
    resume: Path | None
    out: Path | None
    include: list[str]
    exclude: list[str]
    list_file: Path | None
    max_evaluations: int | None
    batch_evaluations: int | None
    time_limit: float | None
    jobs: int | None
    gpus: str | None
    backend: str | None
    address: str | None


@opt.run_options_command()
def batch(
    paths: PathsArgument = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    list_file: ListFileOption = None,
    max_evaluations: MaxEvaluationsOption = None,
    batch_evaluations: BatchEvaluationsOption = None,
    time_limit: TimeLimitOption = None,
    jobs: JobsOption = None,
    gpus: GpusOption = None,
    backend: BackendOption = None,
    address: AddressOption = None,
    *,
    options: RunOptions,
) -> None:
    """Run many problems through the pipeline, one job per GPU, resumable after a kill; write a summary."""
    checked(new_dir, out, "--out")
    request = BatchRequest(
        paths=paths or [],
        resume=resume,
        out=out,
        include=include or [],
        exclude=exclude or [],
        list_file=list_file,
        max_evaluations=max_evaluations,
        batch_evaluations=batch_evaluations,
        time_limit=time_limit,
        jobs=jobs,
        gpus=gpus,
        backend=backend,
        address=address,
    )
    batch_dir, execution, plan = _prepared(request, options)
    _run_and_report(batch_dir, execution, plan)


def _prepared(request: BatchRequest, options: RunOptions) -> tuple[Path, Execution, RunPlan]:
    """The batch directory (made, or found to resume), where it runs and its checked plan; the command's
    `error: ...` when any of them cannot be."""
    from agent.batch.gpu_slots import bad_gpu_ids, parse_gpus

    gpus = request.gpus
    if gpus is not None and (bad := bad_gpu_ids(parse_gpus(gpus))):
        raise fail(f"--gpus {gpus!r}: {', '.join(bad)} is not a GPU index (0,1,...) or a GPU-/MIG- UUID")
    from agent.batch.inputs import BatchConfig, BatchInputError, Budget
    from agent.commands.run_setup import RunSetupError
    from agent.llm.client import EndpointFailed

    try:
        given = _where(request.backend, request.address, request.jobs, gpus)
        if request.resume is not None:
            if request.paths:
                raise BatchInputError("give either PATHS (a new batch) or --resume DIR, not both")
            batch_dir, execution = _resumed(request.resume, given)
            plan = _checked_plan(BatchConfig.load(batch_dir).run)
        else:
            if not request.paths:
                raise BatchInputError("give the problems to run (PATHS), or --resume DIR")
            batch_dir = request.out or Path("runs") / f"batch-{datetime.now():%Y%m%d-%H%M%S}"
            problems = (request.paths, request.include, request.exclude, request.list_file)
            time_limit = request.time_limit
            budget = Budget(
                problem_evaluations=request.max_evaluations,
                batch_evaluations=request.batch_evaluations,
                time_limit_s=time_limit * 60 if time_limit is not None else None,
            )
            plan = _checked_plan(options)
            execution = _created(batch_dir, problems, options, budget, given)
    except (BatchInputError, RunSetupError, FileExistsError) as e:
        raise fail(str(e)) from None
    except EndpointFailed as e:  # what no retry fixes: no job starts
        raise fail(str(e), 1) from None
    return batch_dir, execution, plan


def _run_and_report(batch_dir: Path, execution: Execution, plan: RunPlan) -> None:
    """Run the batch, print its tables and notes; exit 1 when nothing could be attempted or every problem
    failed for the LLM endpoint."""
    from agent.batch.driver import run_batch
    from agent.batch.summary_output import summary_tables
    from agent.llm.client import endpoint_failed

    console.print(f"[bold]ncu-agent batch[/bold] {batch_dir}")
    settings = plan.llm_settings
    key = settings.api_key.get_secret_value() if plan.options.llm and settings.api_key else None
    summary = run_batch(
        batch_dir,
        execution,
        log=lambda m: console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {m}"),
        api_key=None if settings.no_api_key else key,
    )
    nothing = summary.overall.nothing_attempted
    if nothing:
        err.print(f"[red]error:[/red] {nothing}")
    for table in summary_tables(summary):
        console.print(table)
    for note in summary.overall.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"summary: {batch_dir / 'summary.json'}, {batch_dir / 'summary.csv'}")
    if summary.problems and all(endpoint_failed(r.status, r.reason) for r in summary.problems):
        err.print("[red]error:[/red] every problem failed for the LLM endpoint (see the reasons above)")
        raise typer.Exit(1)
    if nothing:
        raise typer.Exit(1)


def _checked_plan(options: RunOptions) -> RunPlan:
    """The batch's plan, its LLM endpoint checked once before any job starts (EndpointFailed). The model
    the preflight found, and the endpoint unless its URL carries credentials, go to every job through
    batch.json (a Ray node has not the driver's environment); the key goes apart (batch/key_channel.py)."""
    from agent.commands.run_setup import check_llm, plan_run
    from agent.llm.settings import safe_url

    plan = plan_run(options)  # bad stages or LLM settings fail here, not in every job
    note = check_llm(plan, console.print)
    if note:
        console.print(f"LLM preflight: {note}")
        s = plan.llm_settings
        options.llm_overrides["model"] = s.model
        if safe_url(s.base_url) == s.base_url:
            options.llm_overrides["base_url"] = s.base_url
    return plan


def _where(backend: str | None, address: str | None, jobs: int | None, gpus: str | None) -> dict[str, Any]:
    """The execution settings given on the command line (absent ones: not given)."""
    from agent.batch.gpu_slots import parse_gpus
    from agent.batch.inputs import BatchInputError

    if backend not in (None, "local", "ray"):
        raise BatchInputError(f"--backend {backend!r}: choose local or ray")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise BatchInputError("--backend ray needs Ray: pip install 'ncu-agent[ray]'")
    given = {
        "backend": backend,
        "address": address,
        "jobs": jobs,
        "gpus": parse_gpus(gpus) if gpus is not None else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _resumed(batch_dir: Path, given: dict[str, Any]) -> tuple[Path, Execution]:
    """A batch to finish: where it runs may change; what it runs may not."""
    from agent.batch.inputs import BatchConfig, BatchInputError

    execution = BatchConfig.load(batch_dir).execution.model_copy(update=given)
    if execution.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise BatchInputError("this batch runs on Ray, which is not installed: pip install 'ncu-agent[ray]'")
    return batch_dir, execution


def _created(
    batch_dir: Path,
    problems: tuple[list[str], list[str], list[str], Path | None],
    options: RunOptions,
    budget: Budget,
    given: dict[str, Any],
) -> Execution:
    """A new batch directory for `problems` (paths, include, exclude, list file)."""
    from agent.batch.driver import create_batch
    from agent.batch.inputs import BatchConfig, Execution, find_problems

    paths, include, exclude, list_file = problems
    cfg = BatchConfig(
        inputs=list(paths),
        include=include,
        exclude=exclude,
        list_file=str(list_file) if list_file else None,
        problems=find_problems(paths, include, exclude, list_file),
        run=options,
        budget=budget,
        execution=Execution(**given),
    )
    create_batch(batch_dir, cfg)
    return cfg.execution
