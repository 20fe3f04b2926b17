"""The settings of a run, each default declared once: `LoopPolicy` (when a stage ends, what counts as a
gain) and `RunOptions` (the policy plus what the run is made of: stages, GPU, proposer, LLM settings).
The command line only overrides them (agent/commands/options.py); a batch and an experiment store them as
JSON.
The LLM's own settings are `agent.llm.settings.LLMSettings` (a config file, the environment, flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class LoopPolicy(BaseModel):
    """When a stage ends and what counts as a gain: each default declared here once (RunOptions extends
    this model; the command line only overrides)."""

    profile: bool = Field(default=True, description="Profile accepted candidates with ncu (GPU only).")
    eval_timeout: float | None = Field(default=None, description="Seconds one evaluation may take.")
    max_iterations: int | None = Field(default=None, description="Cap on each stage's iterations.")
    min_gain: float = Field(default=0.01, description="Relative gain a new best needs (above noise too).")
    no_gain_tries: int = Field(default=16, description="End a stage after this many tries without gain.")
    roofline_target: float = Field(default=90.0, description="End a stage at this % of the roofline.")
    patience: int = Field(default=2, description="Steps in a row without any candidate before a stage ends.")
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), description="Input seeds each candidate is checked on.")


class RunOptions(LoopPolicy):
    """The flags of `ncu-agent run` that shape a run (a batch stores them in batch.json): the loop's
    policy (LoopPolicy), and what the run is made of."""

    stages: list[str] | None = Field(default=None, description="None: the default pipeline.")
    gpu: str | None = Field(default=None, description="Target GPU for prompts; None: the detected one.")
    metric_set: str | None = Field(default=None, description="ncu metric set; None: each stage's.")
    search: str = Field(default="coordinate", description="Search strategy: coordinate or exhaustive.")
    allow_torch: list[str] = Field(
        default_factory=list,
        description="Torch ops candidates may keep outside their Triton kernels, on top of the problem's "
        "allow_torch (agent.evaluation.torch_policy); empty: the strict contract.",
    )
    llm: bool = False
    llm_config: Path | None = None
    llm_overrides: dict[str, Any] = Field(
        default_factory=dict, description="LLM settings given as flags (None values: not given)."
    )


# Command-line flag -> LLMSettings field, for the flags `run` and `batch` share.
LLM_FLAGS = {
    "model": "model",
    "base_url": "base_url",
    "samples": "samples",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "timeout": "timeout_s",
    "max_requests": "max_requests",
    "max_tokens_total": "max_tokens_total",
}
