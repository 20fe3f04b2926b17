"""The options `ncu-agent run` and `ncu-agent batch` share: one declaration each, and one way to turn
them into `RunOptions` (agent/run_setup.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported when a command runs: help pages should not wait for the run's modules
    from agent.run_setup import RunOptions

Stages = Annotated[str | None, typer.Option(help="Comma-separated stages (default: the default pipeline).")]
Gpu = Annotated[
    str | None,
    typer.Option("--gpu", help="Target GPU for prompts (e.g. 4090, h100, h200); default: the detected GPU."),
]
MetricSet = Annotated[str | None, typer.Option("--set", help="ncu metric set (default: each stage's).")]
Profile = Annotated[bool, typer.Option(help="Profile accepted candidates with ncu (GPU only).")]
Search = Annotated[str, typer.Option(help="Search strategy: coordinate or exhaustive.")]
EvalTimeout = Annotated[float | None, typer.Option(help="Seconds one evaluation may take.")]
MaxIterations = Annotated[int | None, typer.Option(help="Cap on each stage's iterations.")]
MinGain = Annotated[float, typer.Option(help="Relative gain a new best needs (above noise too).")]
NoGainTries = Annotated[int, typer.Option(help="End a stage after this many tries without gain.")]
RooflineTarget = Annotated[float, typer.Option(help="End a stage at this % of the roofline.")]
Llm = Annotated[bool, typer.Option("--llm", help="Propose with the LLM endpoint instead of the search.")]
Model = Annotated[str | None, typer.Option(help="LLM model name.")]
BaseUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint URL.")]
Config = Annotated[Path | None, typer.Option(help="TOML config file with an [llm] table.")]
Samples = Annotated[int | None, typer.Option(help="LLM samples per prompt.")]
Temperature = Annotated[float | None, typer.Option(help="LLM sampling temperature.")]
MaxTokens = Annotated[int | None, typer.Option(help="LLM max tokens per reply.")]
Timeout = Annotated[float | None, typer.Option(help="LLM request timeout in seconds.")]
MaxRequests = Annotated[int | None, typer.Option(help="LLM budget: requests per run (a batch: per problem).")]
MaxTokensTotal = Annotated[int | None, typer.Option(help="LLM budget: tokens per run (a batch: per problem)")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not reuse cached LLM replies.")]

# The flags above that are RunOptions (or its LLM overrides); `config` is read as `llm_config`.
RUN_FLAGS = (
    "stages",
    "gpu",
    "metric_set",
    "profile",
    "search",
    "eval_timeout",
    "max_iterations",
    "min_gain",
    "no_gain_tries",
    "roofline_target",
    "llm",
    "model",
    "base_url",
    "samples",
    "temperature",
    "max_tokens",
    "timeout",
    "max_requests",
    "max_tokens_total",
    "no_cache",
)


def run_options(flags: dict[str, Any], config: Path | None) -> RunOptions:
    """RunOptions from a command's parameters (`flags`: its `locals()` at entry, only RUN_FLAGS read).
    `config` is made absolute: a batch's jobs may run elsewhere."""
    from agent.run_setup import RunOptions

    given = {k: flags[k] for k in RUN_FLAGS if k in flags}
    return RunOptions.from_flags(llm_config=config.resolve() if config else None, **given)
