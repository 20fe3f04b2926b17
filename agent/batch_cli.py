"""`ncu-agent batch`: many problems, every GPU, resumable (docs/batch.md). Registered by agent/cli.py."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


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
    stages: Annotated[str | None, typer.Option(help="Comma-separated stages (default pipeline).")] = None,
    gpu: Annotated[
        str | None, typer.Option("--gpu", help="Target GPU for prompts (default: detected).")
    ] = None,
    metric_set: Annotated[
        str | None, typer.Option("--set", help="ncu metric set (default: each stage's).")
    ] = None,
    profile: Annotated[bool, typer.Option(help="Profile accepted candidates with ncu (GPU only).")] = True,
    search: Annotated[str, typer.Option(help="Search strategy: coordinate or exhaustive.")] = "coordinate",
    eval_timeout: Annotated[float | None, typer.Option(help="Seconds one evaluation may take.")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Cap on each stage's iterations.")] = None,
    max_evaluations: Annotated[
        int | None, typer.Option(help="Budget per problem: worker evaluations.", min=1)
    ] = None,
    batch_evaluations: Annotated[
        int | None, typer.Option(help="Budget of the whole batch: worker evaluations.", min=1)
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Budget of the whole batch: minutes of wall time (resumes too).")
    ] = None,
    min_gain: Annotated[float, typer.Option(help="Relative gain a new best needs (above noise too).")] = 0.01,
    no_gain_tries: Annotated[int, typer.Option(help="End a stage after this many tries without gain.")] = 16,
    roofline_target: Annotated[float, typer.Option(help="End a stage at this % of the roofline.")] = 90.0,
    llm: Annotated[bool, typer.Option("--llm", help="Propose with the LLM endpoint.")] = False,
    model: Annotated[str | None, typer.Option(help="LLM model name.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint URL.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file with an [llm] table.")] = None,
    samples: Annotated[int | None, typer.Option(help="LLM samples per prompt.")] = None,
    temperature: Annotated[float | None, typer.Option(help="LLM sampling temperature.")] = None,
    max_requests: Annotated[int | None, typer.Option(help="LLM budget per problem: requests.")] = None,
    max_tokens_total: Annotated[int | None, typer.Option(help="LLM budget per problem: tokens.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not reuse cached LLM replies.")] = False,
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
    from agent.batch import create_batch, run_batch
    from agent.batch_inputs import BatchConfig, BatchInputError, Budget, Execution, find_problems
    from agent.batch_summary import summary_tables
    from agent.gpu_slots import parse_gpus
    from agent.run_setup import RunOptions, RunSetupError, plan_run

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
        options = RunOptions.from_flags(
            stages=stages,
            llm_config=config.resolve() if config else None,  # jobs may run elsewhere
            no_cache=no_cache,
            gpu=gpu,
            metric_set=metric_set,
            profile=profile,
            search=search,
            eval_timeout=eval_timeout,
            max_iterations=max_iterations,
            min_gain=min_gain,
            no_gain_tries=no_gain_tries,
            roofline_target=roofline_target,
            llm=llm,
            model=model,
            base_url=base_url,
            samples=samples,
            temperature=temperature,
            max_requests=max_requests,
            max_tokens_total=max_tokens_total,
        )
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
