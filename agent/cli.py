"""The `ncu-agent` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agent.commands import options as opt
from agent.commands.checks import checked, err, fail, load_spec, new_dir, output_dir
from agent.commands.console import console
from agent.config import RunOptions
from agent.evaluation.torch_policy import describe as describe_policy
from agent.evaluation.torch_policy import merged

# Commands import torch, triton, openai or matplotlib (seconds on a small machine) after checking their
# flags, so help pages and refusals answer at once.
app = typer.Typer(
    help="Make Triton kernels faster, and prove it: prompt, propose, verify, time, profile with ncu.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts name [llm] tables and [x, y] lists: print them as written
)

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
    from agent.commands.run import run_command

    run_command(problem, resume, from_stage, run_dir, start, small_shapes, options)


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
    from agent.commands.run import eval_device
    from agent.evaluation.verdicts import exit_code

    allowed = opt.allow_torch_flag(allow_torch)
    phase = PhaseLog(quiet)
    phase(f"loading the problem {problem} (imports torch and its reference)")
    spec = load_spec(problem, small_shapes)
    spec.allow_torch = merged(spec.allow_torch, allowed)
    from agent.evaluation.evaluate import evaluate
    from agent.problem import describe_shapes
    from agent.report.tables import HEADERS, result_cells

    device = eval_device()
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

    spec = load_spec(problem)
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
    from agent.profiling.metric_sets import MetricSetError, load_metric_set
    from agent.profiling.ncu import profile_candidates
    from agent.profiling.read import profile_report_table, ranked_rules, read_report, seed_json
    from agent.profiling.target import ProfileCandidate

    try:
        mset = load_metric_set(metric_set)
    except MetricSetError as e:
        raise _fail(str(e)) from None
    if report is None:
        if candidate is None or problem is None:
            raise _fail("give a CANDIDATE and --problem, or --report FILE.ncu-rep")
        checked(output_dir, out_dir, "--out-dir")
        spec = load_spec(problem)
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
