"""`ncu-agent batch`: many problems, every GPU, resumable (docs/batch.md). Registered by agent/cli.py."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent import options as opt
from agent.config import RunOptions

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


@opt.run_options_command()
def batch(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Problem folders, KernelBench .py files, bundled problem names, or folders of those "
            "(a KernelBench level folder)."
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Finish the batch in this directory (after a kill, a crash...).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="The batch directory (default runs/batch-TIME).")] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Only problems whose name matches this glob (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave out matching problems (repeatable).")
    ] = None,
    list_file: Annotated[
        Path | None, typer.Option("--list", help="A file of problem names or globs, one a line.")
    ] = None,
    max_evaluations: Annotated[
        int | None, typer.Option(help="Budget per problem: worker evaluations.", min=1)
    ] = None,
    batch_evaluations: Annotated[
        int | None, typer.Option(help="Budget of the whole batch: worker evaluations.", min=1)
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Budget of the whole batch: minutes of wall time (resumes too).")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Problems at once (default: one per GPU; on the CPU 1).", min=1)
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="GPU ids to use, e.g. 0,1 (default: all).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="local (this machine, the default) or ray (a Ray cluster).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local instance).")
    ] = None,
    *,
    options: RunOptions,
) -> None:
    """Run many problems through the pipeline, one job per GPU, resumable after a kill; write a summary."""
    from agent.batch.driver import create_batch, run_batch
    from agent.batch.gpu_slots import parse_gpus
    from agent.batch.inputs import BatchConfig, BatchInputError, Budget, Execution, find_problems
    from agent.batch.summary import summary_tables
    from agent.run_setup import RunSetupError, plan_run

    def fail(message: str) -> typer.Exit:
        err.print(f"[red]error:[/red] {message}")
        return typer.Exit(2)

    if backend not in (None, "local", "ray"):
        raise fail(f"--backend {backend!r}: choose local or ray")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise fail("--backend ray needs Ray: pip install 'ncu-agent[ray]'")
    given = {
        "backend": backend,
        "address": address,
        "jobs": jobs,
        "gpus": parse_gpus(gpus) if gpus is not None else None,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if resume is not None:
        if paths:
            raise fail("give either PATHS (a new batch) or --resume DIR, not both")
        batch_dir = resume
        try:
            stored = BatchConfig.load(batch_dir).execution
        except BatchInputError as e:
            raise fail(str(e)) from None
        execution = stored.model_copy(update=given)  # where it runs may change; what it runs may not
        if execution.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise fail("this batch runs on Ray, which is not installed: pip install 'ncu-agent[ray]'")
    else:
        if not paths:
            raise fail("give the problems to run (PATHS), or --resume DIR")
        try:
            plan_run(options)  # bad stages or LLM settings fail here, not in every job
            problems = find_problems(paths, include or [], exclude or [], list_file)
        except (RunSetupError, BatchInputError) as e:
            raise fail(str(e)) from None
        batch_dir = out or Path("runs") / f"batch-{datetime.now():%Y%m%d-%H%M%S}"
        cfg = BatchConfig(
            inputs=list(paths),
            include=include or [],
            exclude=exclude or [],
            list_file=str(list_file) if list_file else None,
            problems=problems,
            run=options,
            budget=Budget(
                problem_evaluations=max_evaluations,
                batch_evaluations=batch_evaluations,
                time_limit_s=time_limit * 60 if time_limit is not None else None,
            ),
            execution=Execution(**given),
        )
        execution = cfg.execution
        try:
            create_batch(batch_dir, cfg)
        except FileExistsError as e:
            raise fail(str(e)) from None
    console.print(f"[bold]ncu-agent batch[/bold] {batch_dir}")
    summary = run_batch(
        batch_dir,
        execution,
        log=lambda m: console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {m}"),
    )
    for table in summary_tables(summary):
        console.print(table)
    for note in summary.overall.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"summary: {batch_dir / 'summary.json'}, {batch_dir / 'summary.csv'}")
