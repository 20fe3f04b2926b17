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
from agent.cli_checks import checked, fail, new_dir

console = Console(width=None if sys.stdout.isatty() else 160)


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
    stages: opt.Stages = None,
    gpu: opt.Gpu = None,
    metric_set: opt.MetricSet = None,
    profile: opt.Profile = True,
    search: opt.Search = "coordinate",
    eval_timeout: opt.EvalTimeout = None,
    max_iterations: opt.MaxIterations = None,
    max_evaluations: Annotated[
        int | None, typer.Option(help="Budget per problem: worker evaluations.", min=1)
    ] = None,
    batch_evaluations: Annotated[
        int | None, typer.Option(help="Budget of the whole batch: worker evaluations.", min=1)
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Budget of the whole batch: minutes of wall time (resumes too).")
    ] = None,
    min_gain: opt.MinGain = 0.01,
    no_gain_tries: opt.NoGainTries = 16,
    roofline_target: opt.RooflineTarget = 90.0,
    llm: opt.Llm = False,
    model: opt.Model = None,
    base_url: opt.BaseUrl = None,
    config: opt.Config = None,
    samples: opt.Samples = None,
    temperature: opt.Temperature = None,
    max_tokens: opt.MaxTokens = None,
    timeout: opt.Timeout = None,
    max_requests: opt.MaxRequests = None,
    max_tokens_total: opt.MaxTokensTotal = None,
    no_cache: opt.NoCache = False,
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
) -> None:
    """Run many problems through the pipeline, one job per GPU, resumable after a kill; write a summary."""
    flags = dict(locals())  # first: the parameters, for opt.run_options
    # Refusals first: the imports below take seconds (torch, the LLM client).
    from agent.batch.gpu_slots import bad_gpu_ids, parse_gpus

    checked(new_dir, out, "--out")
    if backend not in (None, "local", "ray"):
        raise fail(f"--backend {backend!r}: choose local or ray")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise fail("--backend ray needs Ray: pip install 'ncu-agent[ray]'")
    if gpus is not None and (bad := bad_gpu_ids(parse_gpus(gpus))):
        raise fail(f"--gpus {gpus!r}: {', '.join(bad)} is not a GPU index (0,1,...) or a GPU-/MIG- UUID")
    from agent.batch.driver import create_batch, run_batch
    from agent.batch.inputs import BatchConfig, BatchInputError, Budget, Execution, find_problems
    from agent.batch.summary import summary_tables
    from agent.run_setup import RunSetupError, plan_run

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
        options = opt.run_options(flags, config)
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
