"""ncu metric sets: the named sets of metrics, sections and section sets in profiles/NAME.toml that a stage
profiles with (agent/profiling/ncu.py builds the ncu command from one)."""

from __future__ import annotations

import tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.data.paths import profiles_dir


class MetricSetError(ValueError):
    """A metric set that does not exist or is malformed."""


class MetricSet(BaseModel):
    """A named set of ncu metrics (profiles/NAME.toml)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    metrics: list[str] = Field(default_factory=list, description="Asked for with --metrics; shown first.")
    sections: list[str] = Field(default_factory=list, description="Collected with --section each.")
    set: str | None = Field(default=None, description="Collected with --set (basic, detailed, full).")
    section_metrics: list[str] = Field(
        default_factory=list, description="Collected by the sections or the set; shown after `metrics`."
    )

    @model_validator(mode="after")
    def _check(self) -> MetricSet:
        if not (self.metrics or self.sections or self.set):
            raise ValueError("needs at least one of metrics, sections, set")
        if self.section_metrics and not (self.sections or self.set):
            raise ValueError("section_metrics needs sections or a set to collect them")
        return self

    @property
    def display_metrics(self) -> list[str]:
        """The metrics a prompt shows, in order."""
        return list(dict.fromkeys([*self.metrics, *self.section_metrics]))

    @property
    def has_rules(self) -> bool:
        """ncu stores rule results only for sections and sets, never for --metrics alone."""
        return bool(self.sections or self.set)


def list_metric_sets() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def load_metric_set(name: str) -> MetricSet:
    path = profiles_dir() / f"{name}.toml"
    if not path.is_file():
        raise MetricSetError(f"unknown metric set {name!r}; known: {', '.join(list_metric_sets())}")
    try:
        ms = MetricSet.model_validate(tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, ValidationError) as e:
        raise MetricSetError(f"{path}: {e}") from None
    if ms.name != name:
        raise MetricSetError(f"{path}: name {ms.name!r} differs from the file's name {name!r}")
    return ms
