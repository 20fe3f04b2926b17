"""Rendering a stage's prompt from its jinja2 template (prompts/) and a PromptContext."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, Field

from agent.data.paths import prompts_dir
from agent.prompt.gpus import GpuSpec
from agent.prompt.stages import Stage

# Section headers of a rendered prompt, in the order they appear (see split_sections).
SECTION_HEADERS: tuple[str, ...] = (
    "# Target GPU",
    "[OPTIMIZATION STAGE]",
    "[CURRENT CODE]",
    "[NCU PROFILING METRICS]",
    "**Task**",
    "OUTPUT RULES",
)
PREAMBLE = "preamble"


class HistoryEntry(BaseModel):
    """One earlier attempt, as the next prompt reports it."""

    label: str = Field(description="What was tried, e.g. 'iter 3: num_warps 4->8'.")
    outcome: str = Field(description="'accepted', 'incorrect', 'slower', a Status value...")
    detail: str = ""
    time_ms: float | None = None
    iteration: int | None = Field(default=None, description="The step it came from (None: not shown).")
    stage: str | None = Field(default=None, description="The stage it came from (None: not shown).")
    change: str = Field(default="", description="What it changed against its parent, in a few words.")


class ProblemFacts(BaseModel):
    """What a kernel engineer asks first: the shapes and dtypes in and out, and what is computed."""

    inputs: list[str] = Field(description="One 'shape dtype' per tensor input, e.g. '[16, 16384] float32'.")
    outputs: list[str]
    reference: str = Field(default="", description="The reference module's code, shortened.")


class Standing(BaseModel):
    """Where the current kernel stands: its time and speedups when timed, else why it is not ranked."""

    median_ms: float | None = None
    speedup_eager: float | None = None
    speedup_compiled: float | None = None
    pct_roofline: float | None = None
    untimed: str = Field(default="", description="Why there is no time (the CPU: checked, not ranked).")


class PromptContext(BaseModel):
    """Everything a stage template may use."""

    gpu: GpuSpec
    stage: Stage
    code: str
    metrics: dict[str, Any] | None = Field(
        default=None, description="Metrics as rendered (seed shape: {kernel name: [one dict per launch]})."
    )
    metrics_unavailable_reason: str | None = None
    ncu_rules: list[str] = Field(default_factory=list, description="ncu rule messages, most important first.")
    history: list[HistoryEntry] = Field(default_factory=list)
    problem: ProblemFacts | None = Field(default=None, description="None: no [PROBLEM] block.")
    standing: Standing | None = Field(default=None, description="None: no line on the current kernel.")


def _num(value: Any) -> Any:
    """1008.0 -> '1008', 82.6 -> '82.6'; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _json(value: Any) -> str:
    # Not jinja's tojson: it HTML-escapes '<' and '>', which appear in C++-style kernel names.
    return json.dumps(value, indent=2, default=str)


def _oneline(text: Any) -> str:
    return " ".join(str(text).split())


def fence(code: str) -> str:
    """A backtick fence longer than any backtick run inside the code, so the code cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


# An experiment's template set (agent/experiment/units.py): folders searched before prompts/, so an arm can
# replace one template or one part and inherit the rest.
_TEMPLATE_DIRS: ContextVar[tuple[Path, ...]] = ContextVar("template_dirs", default=())


@contextmanager
def template_dirs(*dirs: Path) -> Iterator[None]:
    """Within the block, templates are looked up in `dirs` first, then in prompts/."""
    token = _TEMPLATE_DIRS.set(tuple(Path(d).resolve() for d in dirs))
    try:
        yield
    finally:
        _TEMPLATE_DIRS.reset(token)


def environment() -> jinja2.Environment:
    """The jinja environment of the current template set (prompts/, or an arm's folders before it)."""
    return _environment(_TEMPLATE_DIRS.get())


@cache
def _environment(extra: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*extra, prompts_dir()]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(num=_num, json=_json, oneline=_oneline)
    return env


environment.cache_clear = _environment.cache_clear  # type: ignore[attr-defined]  # tests swap prompts/


def render_prompt(ctx: PromptContext) -> str:
    """The prompt of `ctx.stage` for this GPU, code and profile."""
    code = ctx.code.replace("\r\n", "\n").strip("\n")
    template = environment().get_template(ctx.stage.template)
    return template.render(
        gpu=ctx.gpu,
        stage=ctx.stage,
        code=code,
        code_fence=fence(code),
        metrics=ctx.metrics,
        metrics_unavailable_reason=ctx.metrics_unavailable_reason,
        ncu_rules=ctx.ncu_rules,
        history=ctx.history,
        problem=ctx.problem,
        standing=ctx.standing,
        reference_fence=fence(ctx.problem.reference) if ctx.problem else "```",
    )


def split_sections(prompt: str) -> dict[str, str]:
    """The prompt cut at its section headers, in order: {'preamble': ..., '# Target GPU': ..., ...}.

    Each value runs from its header (included) to the next header; concatenated they give back the prompt.
    Headers are searched at line starts, each after the previous one, so code that happens to contain a
    header's text before its own section does not split it. Absent headers are absent from the result.
    """
    starts: list[tuple[int, str]] = []
    pos = 0
    for header in SECTION_HEADERS:
        match = re.compile(rf"^{re.escape(header)}", re.MULTILINE).search(prompt, pos)
        if match:
            starts.append((match.start(), header))
            pos = match.end()
    sections: dict[str, str] = {}
    if not starts or starts[0][0] > 0:
        sections[PREAMBLE] = prompt[: starts[0][0] if starts else len(prompt)]
    for i, (start, header) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(prompt)
        sections[header] = prompt[start:end]
    return sections
