"""The options `ncu-agent run`, `batch` and `experiment` share, declared once, and how a command gets them.

`@run_options_command()` adds the shared flags to a command and hands it one `RunOptions` (built from the
flags; every default comes from the model, agent/config.py), so no
command repeats a flag, a default or its help.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.commands.checks import fail
from agent.config import LLM_FLAGS, RunOptions
from agent.evaluation.torch_policy import PolicyError, parse_names


def _help(name: str) -> str:
    return RunOptions.model_fields[name].description or ""


Stages = Annotated[str | None, typer.Option(help="Comma-separated stages (default: the default pipeline).")]
Gpu = Annotated[
    str | None,
    typer.Option("--gpu", help="Target GPU for prompts (e.g. 4090, h100, h200); default: the detected GPU."),
]
MetricSet = Annotated[str | None, typer.Option("--set", help="ncu metric set (default: each stage's).")]
BaseUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint URL.")]
Config = Annotated[Path | None, typer.Option(help="TOML config file with an [llm] table.")]
SmallShapes = Annotated[
    str | None,
    typer.Option(
        help="CPU sizes as NAME=VALUE,... over the reference's module globals (default: the problem's "
        "[small_shapes], else derived from the file's size constants)."
    ),
]
AllowTorch = Annotated[
    str | None,
    typer.Option(
        "--allow-torch",
        help="Torch ops candidates may keep outside their Triton kernels, comma-separated (conv2d,linear,"
        "matmul,...; docs/kernelbench.md), on top of the problem's allow_torch; default: none (strict).",
    ),
]


def allow_torch_flag(value: str | None) -> list[str]:
    """The names of `--allow-torch`, checked; exit 2 naming the known ones otherwise."""
    try:
        return parse_names(value)
    except PolicyError as e:
        raise fail(str(e)) from None


# The shared flags: name -> its typer annotation. RunOptions fields take their default from the model;
# the LLM flags (LLM_FLAGS) default to None: not given, so the config file or the environment decides.
FLAGS: dict[str, Any] = {
    "stages": Stages,
    "gpu": Gpu,
    "metric_set": MetricSet,
    "profile": Annotated[bool, typer.Option(help=_help("profile"))],
    "search": Annotated[str, typer.Option(help=_help("search"))],
    "eval_timeout": Annotated[float | None, typer.Option(help=_help("eval_timeout"))],
    "max_iterations": Annotated[int | None, typer.Option(help=_help("max_iterations"))],
    "min_gain": Annotated[float, typer.Option(help=_help("min_gain"))],
    "no_gain_tries": Annotated[int, typer.Option(help=_help("no_gain_tries"))],
    "roofline_target": Annotated[float, typer.Option(help=_help("roofline_target"))],
    "allow_torch": AllowTorch,
    "llm": Annotated[
        bool, typer.Option("--llm", help="Propose with the LLM endpoint instead of the search.")
    ],
    "model": Annotated[str | None, typer.Option(help="LLM model name.")],
    "base_url": BaseUrl,
    "config": Config,
    "samples": Annotated[int | None, typer.Option(help="LLM samples per prompt.")],
    "temperature": Annotated[float | None, typer.Option(help="LLM sampling temperature.")],
    "max_tokens": Annotated[int | None, typer.Option(help="LLM max tokens per reply.")],
    "timeout": Annotated[float | None, typer.Option(help="LLM request timeout in seconds.")],
    "max_requests": Annotated[
        int | None, typer.Option(help="LLM budget: requests per run (a batch: per problem).")
    ],
    "max_tokens_total": Annotated[
        int | None, typer.Option(help="LLM budget: tokens per run (a batch: per problem)")
    ],
    "no_cache": Annotated[bool, typer.Option("--no-cache", help="Do not reuse cached LLM replies.")],
    "no_api_key": Annotated[
        bool,
        typer.Option(
            "--no-api-key", help="The LLM server needs no key (keys come from the environment only)."
        ),
    ],
}


def _default(name: str) -> Any:
    if name in RunOptions.model_fields and name not in ("stages", "llm_config", "allow_torch"):
        return RunOptions.model_fields[name].default
    return False if name in ("no_cache", "no_api_key") else None


def options_from(flags: dict[str, Any]) -> RunOptions:
    """RunOptions from the shared flags given (absent ones keep the model's default). `config` is made
    absolute: a batch's jobs may run elsewhere."""
    flags = dict(flags)
    config: Path | None = flags.pop("config", None)
    stages: str | None = flags.pop("stages", None)
    no_cache: bool = flags.pop("no_cache", False)
    no_api_key: bool = flags.pop("no_api_key", False)
    allow_torch = allow_torch_flag(flags.pop("allow_torch", None))
    llm = {LLM_FLAGS[k]: flags.pop(k) for k in list(flags) if k in LLM_FLAGS}
    return RunOptions(
        stages=[s.strip() for s in stages.split(",") if s.strip()] if stages else None,
        llm_config=config.resolve() if config else None,
        allow_torch=allow_torch,
        llm_overrides={
            **llm,
            "use_cache": False if no_cache else None,
            "no_api_key": True if no_api_key else None,
        },
        **flags,
    )


def run_options_command(
    leave_out: tuple[str, ...] = (), helps: dict[str, str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command the shared flags (but `leave_out`; `helps` rewords some) after its own
    parameters; the command takes `options: RunOptions` in their place."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(fn).parameters.values()
            if p.name != "options"
        ]
        shared = {}
        for name, annotation in FLAGS.items():
            if name in leave_out:
                continue
            if helps and name in helps:
                base, option = typing.get_args(annotation)
                annotation = Annotated[base, typer.Option(*option.param_decls, help=helps[name])]
            shared[name] = annotation
        params = own + [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=_default(n))
            for n, a in shared.items()
        ]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            flags = {n: kwargs.pop(n) for n in shared}
            return fn(**kwargs, options=options_from(flags))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read this signature, not the function's own
        return command

    return wrap
