"""`ncu-agent experiment`: its options, and the experiment directory they make or resume
(agent/experiment/units.py runs it, agent/experiment/findings.py analyses it). Registered by agent/cli.py."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from agent.commands import options as opt
from agent.commands.checks import checked, fail, new_dir
from agent.config import RunOptions


@dataclass(frozen=True)
class ExperimentRequest:
    """What `ncu-agent experiment` was asked, besides the run options it shares with `ncu-agent run`."""

    problems: list[str]
    arms: list[str]
    samples: int
    seed: int
    out: Path | None
    resume: Path | None
    llm_samples: int | None
    send_seed: bool
    reuse_checks: bool
    metric: str
    alpha: float
    tie: float
    resamples: int
    analyze_only: bool
    html: bool


def experiment_command(request: ExperimentRequest, options: RunOptions) -> Path:
    """Create (or find) the experiment directory for `ncu-agent experiment`; ExperimentError if it cannot."""
    from agent.batch.inputs import BatchInputError, find_problems
    from agent.experiment.design import ExperimentConfig, ExperimentError, parse_arm
    from agent.experiment.units import create_experiment

    if request.resume is not None:
        if request.problems or request.arms:
            raise ExperimentError(
                "give either PROBLEMS and --arm (a new experiment) or --resume DIR, not both"
            )
        ExperimentConfig.load(request.resume)
        return request.resume
    if not request.problems:
        raise ExperimentError("give the problems to run (PROBLEMS), or --resume DIR")
    try:
        entries = find_problems(request.problems, [], [], None)
    except BatchInputError as e:
        raise ExperimentError(str(e)) from None
    cfg = ExperimentConfig(
        arms=[parse_arm(a) for a in request.arms],
        problems=entries,
        samples=request.samples,
        seed=request.seed,
        run=options,
        send_seed=request.send_seed,
        reuse_checks=request.reuse_checks,
    )
    exp_dir = request.out or Path("runs") / f"experiment-{datetime.now():%Y%m%d-%H%M%S}"
    create_experiment(exp_dir, cfg)
    return exp_dir


def run_experiment_command(request: ExperimentRequest, options: RunOptions) -> None:
    """The work of `ncu-agent experiment`: make or find the directory, run what is left, analyse, report."""
    from pydantic import ValidationError
    from rich.console import Console

    from agent.experiment.design import ExperimentError
    from agent.experiment.findings import AnalysisOptions, analyze, write_results
    from agent.experiment.html import write_html
    from agent.experiment.stats import METRICS
    from agent.experiment.tables import terminal_report
    from agent.experiment.units import run_experiment

    console = Console(width=None if sys.stdout.isatty() else 160)
    # The run options as `ncu-agent run` builds them, with the LLM always on and --llm-samples as its
    # samples (this command's --samples is runs per arm and problem).
    options = options.model_copy(
        update={"llm": True, "llm_overrides": {**options.llm_overrides, "samples": request.llm_samples}}
    )
    metric = request.metric
    try:
        analysis = AnalysisOptions(
            metric=metric, alpha=request.alpha, tie=request.tie, resamples=request.resamples
        )
        if metric != "auto" and metric not in METRICS:
            raise ExperimentError(f"--metric {metric!r}: choose auto or one of {', '.join(METRICS)}")
        if request.analyze_only and request.resume is None:
            raise ExperimentError("--analyze needs --resume DIR")
        exp_dir = experiment_command(request, options)
        console.print(f"[bold]ncu-agent experiment[/bold] {exp_dir}")
        log = lambda m: console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {m}")  # noqa: E731
        notes = [] if request.analyze_only else run_experiment(exp_dir, log)
        results = analyze(exp_dir, analysis, notes)
    except (ExperimentError, ValidationError, ValueError) as e:
        raise fail(str(e)) from None
    for item in terminal_report(results):
        console.print(item)
    written = [write_results(exp_dir, results)]
    if request.html:
        written.append(write_html(exp_dir, results))
    console.print("results: " + ", ".join(str(p) for p in written))


# The command's own options, declared apart so that its signature stays a list of names.
ProblemsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Problem folders, KernelBench .py files, bundled problem names, or folders of those."
    ),
]
ArmOption = Annotated[
    list[str] | None,
    typer.Option(
        "--arm",
        help="NAME=KEY:VALUE,... (repeat; two or more arms, the first is the baseline). Keys: "
        "stage (a bundled stage or a stage .toml file; several joined by +), prompts (a template "
        "folder searched before prompts/), config (a TOML file with an llm table), search (the "
        "built-in search instead of the LLM), or an LLM setting: model, temperature, samples, "
        "max_tokens, base_url, timeout_s...",
    ),
]
SamplesOption = Annotated[int, typer.Option(help="Runs per arm and problem, each with its own seed.", min=1)]
SeedOption = Annotated[int, typer.Option(help="The experiment's seed (sample seeds derive from it).")]
OutOption = Annotated[
    Path | None, typer.Option(help="The experiment directory (default runs/experiment-TIME).")
]
ResumeOption = Annotated[
    Path | None, typer.Option(help="Finish (or just re-analyse) the experiment in this directory.")
]
LlmSamplesOption = Annotated[int | None, typer.Option(help="LLM replies per prompt.")]
SendSeedOption = Annotated[bool, typer.Option(help="Send each run's seed to the endpoint.")]
ReuseChecksOption = Annotated[
    bool, typer.Option(help="On the CPU, check each (problem, source) once per experiment.")
]
MetricOption = Annotated[
    str,
    typer.Option(
        help="The metric the verdict is about: auto, speedup, correct, compile, constraint, tokens."
    ),
]
AlphaOption = Annotated[float, typer.Option(help="Significance level of the paired tests.")]
TieOption = Annotated[float, typer.Option(help="Tie band: relative for ratios, absolute for rates.")]
ResamplesOption = Annotated[int, typer.Option(help="Bootstrap resamples.", min=100)]
AnalyzeOption = Annotated[bool, typer.Option("--analyze", help="With --resume: run nothing, analyse.")]
HtmlOption = Annotated[bool, typer.Option(help="Write EXP_DIR/report.html.")]


@opt.run_options_command(
    leave_out=("search", "llm", "samples", "no_cache"),
    helps={
        "stages": "Comma-separated stages of arms that name none.",
        "model": "LLM model of arms that name none.",
    },
)
def experiment(
    problems: ProblemsArgument = None,
    arm: ArmOption = None,
    samples: SamplesOption = 1,
    seed: SeedOption = 0,
    out: OutOption = None,
    resume: ResumeOption = None,
    llm_samples: LlmSamplesOption = None,
    send_seed: SendSeedOption = True,
    reuse_checks: ReuseChecksOption = True,
    metric: MetricOption = "auto",
    alpha: AlphaOption = 0.05,
    tie: TieOption = 0.01,
    resamples: ResamplesOption = 10_000,
    analyze_only: AnalyzeOption = False,
    html: HtmlOption = True,
    *,
    options: RunOptions,
) -> None:
    """Compare arms (prompt templates, stage files, models, sampling settings) on the same problems, with
    paired statistics: interleaved, resumable, everything in the store (docs/experiments.md)."""
    checked(new_dir, out, "--out")
    request = ExperimentRequest(
        problems=problems or [],
        arms=arm or [],
        samples=samples,
        seed=seed,
        out=out,
        resume=resume,
        llm_samples=llm_samples,
        send_seed=send_seed,
        reuse_checks=reuse_checks,
        metric=metric,
        alpha=alpha,
        tie=tie,
        resamples=resamples,
        analyze_only=analyze_only,
        html=html,
    )
    run_experiment_command(request, options)
