"""Optimization stages as data: one TOML file per stage in prompts/stages/, one template each in prompts/.

A new stage (tiling, algorithmic, occupancy, first-version...) is a new `prompts/stages/<name>.toml` plus
the template it names; no code changes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.data.paths import prompts_dir
from agent.source.stage_rules import RULES


class StageError(ValueError):
    """An unknown stage, or a stage file that does not validate."""


class StageParameter(BaseModel):
    """A knob the stage lets the proposer turn, with the values it may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    values: tuple[int | float | str, ...] = Field(default=(), description="Allowed values; empty: any.")
    description: str = Field(default="", description="Shown instead of the values when there are none.")


class Tip(BaseModel):
    """A titled piece of advice, rendered as '**title**:' then its text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    text: str


class StageConstraints(BaseModel):
    """Rules a candidate must keep, checked statically before any evaluation. None/False: not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_sizes_fixed: bool = Field(default=False, description="BLOCK_* constexpr values unchanged.")
    grid_fixed: bool = Field(default=False, description="Grid computation unchanged.")
    num_stages_max_delta: int | None = Field(default=None, description="Allowed |new - old| num_stages.")
    autotune_wraps_jit: bool = Field(default=False, description="@triton.autotune decorates a @triton.jit.")
    autotune_min_configs: int | None = None
    autotune_max_configs: int | None = None
    autotune_includes_original: bool = Field(
        default=False, description="An autotune config list holds the original launch config."
    )
    rules: tuple[str, ...] = Field(
        default=(),
        description="Ids of agent.source.stage_rules rules to check, besides those the fields above "
        "turn on and the generic ones every stage gets (docs/stages.md lists them all).",
    )

    def rule_ids(self) -> tuple[str, ...]:
        """The stage's own rules: `rules`, then those the flag fields turn on (micro's TOML uses flags)."""
        counted = self.autotune_min_configs is not None or self.autotune_max_configs is not None
        implied = [
            rule
            for on, rule in (
                (self.block_sizes_fixed, "block-sizes"),
                (self.grid_fixed, "grid-mapping"),
                (self.num_stages_max_delta is not None, "num-stages"),
                (self.autotune_wraps_jit, "autotune-wraps-jit"),
                (counted, "config-count"),
                (self.autotune_includes_original, "original-config"),
            )
            if on
        ]
        return tuple(dict.fromkeys([*self.rules, *implied]))

    @model_validator(mode="after")
    def _rules_have_their_settings(self) -> StageConstraints:
        ids = self.rule_ids()
        if "num-stages" in ids and self.num_stages_max_delta is None:
            raise ValueError("rule 'num-stages' needs num_stages_max_delta")
        if "config-count" in ids and self.autotune_min_configs is None and self.autotune_max_configs is None:
            raise ValueError("rule 'config-count' needs autotune_min_configs and/or autotune_max_configs")
        return self


class Stage(BaseModel):
    """One optimization stage: what the prompt asks for and what the search may change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    focus: str
    task: str = Field(description="The '**Task**:' line of the prompt.")
    task_without_metrics: str = Field(
        default="", description="The task line when there are no metrics to analyze ('': `task`)."
    )
    template: str = Field(description="Template file, relative to prompts/.")
    metric_set: str = Field(description="Metric set of profiles/ that the prompt shows.")
    budget: int = Field(default=10, ge=1, description="Iterations a pipeline gives this stage by default.")
    order: int = Field(
        default=100, description="Place in the default pipeline, lowest first; ties run in name order."
    )
    in_default_pipeline: bool = Field(default=True, description="False: the stage runs only when named.")
    starts_from: Literal["kernel", "reference"] = Field(
        default="kernel",
        description="'reference': the stage writes a first kernel from the PyTorch reference, which its "
        "prompt shows as the code; such a stage opens the default pipeline only when there is no kernel.",
    )
    parameters: tuple[StageParameter, ...] = ()
    guidelines: tuple[str, ...] = ()
    tips: tuple[Tip, ...] = ()
    constraints: StageConstraints = StageConstraints()

    @model_validator(mode="after")
    def _unique_parameters(self) -> Stage:
        names = [p.name for p in self.parameters]
        if len(names) != len(set(names)):
            raise ValueError(f"stage {self.name!r} lists a parameter twice: {names}")
        return self

    def parameter(self, name: str) -> StageParameter | None:
        return next((p for p in self.parameters if p.name == name), None)


def _stages_dir() -> Path:
    return prompts_dir() / "stages"


def list_stages() -> list[str]:
    """Names of the stages available (their TOML files), sorted."""
    return sorted(p.stem for p in _stages_dir().glob("*.toml"))


def load_stage(name: str) -> Stage:
    """The stage `name`, read from prompts/stages/<name>.toml and checked (its template must exist)."""
    known = list_stages()
    if name not in known:  # also keeps 'name' from reaching outside prompts/stages
        raise StageError(f"unknown stage {name!r}; known stages: {', '.join(known) or '(none)'}")
    path = _stages_dir() / f"{name}.toml"
    try:
        with path.open("rb") as f:
            stage = Stage.model_validate(tomllib.load(f))
    except (tomllib.TOMLDecodeError, ValidationError) as e:
        raise StageError(f"stage file {path} is invalid: {e}") from None
    if stage.name != name:
        raise StageError(f"stage file {path} names itself {stage.name!r}; the name must match the file")
    if not (prompts_dir() / stage.template).is_file():
        raise StageError(f"stage {name!r} uses template {stage.template!r}, missing from {prompts_dir()}")
    unknown = [r for r in stage.constraints.rule_ids() if r not in RULES]
    if unknown:
        raise StageError(
            f"stage {name!r} names unknown constraint rule(s) {', '.join(unknown)}; known: {', '.join(RULES)}"
        )
    return stage


def default_pipeline(has_kernel: bool = True) -> list[str]:
    """The stages a run goes through when none are named, in order.

    Stages with `in_default_pipeline`, by (order, name). Stages that start from the PyTorch reference
    (`starts_from = "reference"`, the bundled `first`) are included, first, only when `has_kernel` is False.
    """
    loaded = [load_stage(n) for n in list_stages()]
    picked = [s for s in loaded if s.in_default_pipeline and (s.starts_from == "kernel" or not has_kernel)]
    picked.sort(key=lambda s: (s.starts_from != "reference", s.order, s.name))
    return [s.name for s in picked]
