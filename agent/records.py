"""Data that crosses a module or process boundary.

Every record the loop writes to the store, and every message between the loop and a worker process,
is one of these models, so both sides validate what they receive.
"""

from __future__ import annotations

import json
import statistics
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class Status(StrEnum):
    """What became of a candidate. Everything but ACCEPTED is a rejection."""

    ACCEPTED = "accepted"
    NO_CODE = "no_code"  # the reply held no Python/Triton code
    CONSTRAINT = "constraint"  # broke a rule of its stage (checked before any evaluation)
    COMPILE_ERROR = "compile_error"  # import / Triton compile failed
    CRASHED = "crashed"  # raised, or the worker died (segfault, illegal address, OOM)
    TIMEOUT = "timeout"  # the worker ran past its time limit and was killed
    INCORRECT = "incorrect"  # wrong values, shape, dtype, unwritten outputs...
    CHEATING = "cheating"  # the work was not done by the candidate's Triton kernels
    UNDECIDED = "undecided"  # the CPU cannot decide (a GPU-only branch): not accepted; the GPU check decides


class ProblemSpec(BaseModel):
    """A problem: a KernelBench-style reference module, optionally a starting Triton kernel."""

    name: str
    reference_path: Path
    kernel_path: Path | None = None
    description: str = ""
    small_shapes: dict[str, int | float] = Field(
        default_factory=dict,
        description="Module globals to override for CPU checks (the interpreter is slow).",
    )
    shapes_origin: str = Field(
        default="problem.toml",
        description=(
            "Where small_shapes came from: 'problem.toml', 'flag' or 'derived' (agent.start.small_shapes)."
        ),
    )
    atol: float | None = Field(default=None, description="Override of the dtype-aware absolute tolerance.")
    rtol: float | None = Field(default=None, description="Override of the dtype-aware relative tolerance.")
    flops: str | None = Field(
        default=None, description="Python expression over the module globals giving the FLOPs of one call."
    )
    allow_torch: list[str] = Field(
        default_factory=list,
        description="Torch ops a candidate may keep outside its Triton kernels "
        "(agent.evaluation.torch_policy); empty: the strict contract.",
    )


class TensorInfo(BaseModel):
    shape: list[int]
    dtype: str
    nbytes: int


class ProblemShapes(BaseModel):
    """Inputs and outputs of one forward call at one size, found without allocating (meta device)."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    flops: float | None = None

    @property
    def bytes_moved(self) -> int:
        """The fewest bytes a kernel must move: each input read once, each output written once."""
        return sum(t.nbytes for t in self.inputs) + sum(t.nbytes for t in self.outputs)


class LaunchConfig(BaseModel):
    """A (num_warps, num_stages) choice for one kernel."""

    num_warps: int
    num_stages: int


class Check(BaseModel):
    """One correctness or anti-cheat check and its outcome."""

    name: str
    passed: bool
    detail: str = ""


class TimingStats(BaseModel):
    """Times of one callable over many repetitions, in milliseconds."""

    times_ms: list[float]
    method: str = "cuda-events, L2 flushed before each call"

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def iqr_ms(self) -> float:
        if len(self.times_ms) < 4:
            return 0.0
        q = statistics.quantiles(self.times_ms, n=4)
        return q[2] - q[0]

    @property
    def n(self) -> int:
        return len(self.times_ms)


class RetuneNote(BaseModel):
    """One autotuned kernel, re-tuned by the judge: each config's median, and which one the timing used."""

    kernel: str
    autotuner_choice: dict[str, int | float | str]
    chosen: dict[str, int | float | str]
    medians_ms: list[float] = Field(description="Per config (in the autotune list's order), its median time.")
    configs: list[dict[str, int | float | str]] = Field(default_factory=list)
    reps: int = 0
    skipped: list[str] = Field(default_factory=list, description="Configs that could not run, and why.")


class Timings(BaseModel):
    """The candidate and the PyTorch baselines, measured in one run, interleaved (`layout` says in which
    processes)."""

    candidate: TimingStats | None = None
    eager: TimingStats | None = None
    compiled: TimingStats | None = None
    compile_error: str | None = None
    copy_bandwidth_gbps: float | None = None
    bytes_moved: int | None = None
    roofline_ms: float | None = None
    device_name: str | None = None
    skipped_reason: str | None = None
    mode: str = Field(default="events", description="'events' (per call) or 'cudagraph' (graph replays)")
    layout: str = Field(
        default="one-process",
        description="'split': the candidate timed in its sandboxed worker, the baselines in the judge's "
        "process, in turns; 'one-process': all three in one process.",
    )
    noisy: bool = Field(default=False, description="Re-measured and still unsteady: compare with care.")
    noise_detail: str = ""
    retuned: list[RetuneNote] = Field(
        default_factory=list,
        description="Autotuned kernels whose config the judge re-chose by its own interleaved, L2-flushed "
        "timing (Triton's pick varies from process to process when configs are close).",
    )

    def _ratio(self, base: TimingStats | None) -> float | None:
        if base is None or self.candidate is None:
            return None
        return base.median_ms / self.candidate.median_ms

    @property
    def speedup_eager(self) -> float | None:
        return self._ratio(self.eager)

    @property
    def speedup_compiled(self) -> float | None:
        return self._ratio(self.compiled)

    @property
    def pct_roofline(self) -> float | None:
        if self.roofline_ms is None or self.candidate is None:
            return None
        return 100.0 * self.roofline_ms / self.candidate.median_ms


class EvalRequest(BaseModel):
    """What the loop asks a worker to do with one candidate."""

    problem: ProblemSpec
    candidate_source: str
    device: str = Field(description="'cuda' or 'cpu' (the Triton interpreter)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    small: bool = Field(default=False, description="Use the problem's small shapes (always on the CPU).")
    time: bool = Field(default=True, description="Time candidate and baselines (GPU only).")
    timing_reps: int = Field(
        default=10,
        description="Rounds of the interleaved timing, at least; more (up to 500) until ~0.25 s is spent "
        "and every median is known to +-0.5%, or ~1 s is spent (agent.evaluation.timing).",
    )
    baselines: bool = Field(default=True, description="Also time eager and torch.compile.")
    extra_checks: bool = Field(
        default=True,
        description="After the seeds: inputs refilled in place and fresh tensors (result caches), a scaled "
        "value distribution, another shape.",
    )


class EvalResult(BaseModel):
    """What a worker found. Written to the store as is."""

    status: Status
    reason: str = ""
    rule: str | None = Field(
        default=None, description="The rule or check that rejected it (docs/anticheat.md); None if accepted."
    )
    checks: list[Check] = Field(default_factory=list)
    timings: Timings | None = None
    kernels_launched: dict[str, int] = Field(default_factory=dict)
    chosen_configs: dict[str, dict[str, int | float | str]] = Field(
        default_factory=dict, description="Per autotuned kernel, the config its autotuner chose (for ncu)."
    )
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    device: str = ""
    interpreter: bool = False
    shapes: dict[str, int | float] = Field(
        default_factory=dict,
        description="Module globals set for this evaluation (the small shapes); empty: the file's own sizes.",
    )
    allow_torch: list[str] = Field(
        default_factory=list, description="The torch-op policy it was judged under; empty: strict."
    )
    wall_s: float = 0.0
    phases_s: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds spent per phase of the evaluation in the worker (load, each seed, extra draws, "
        "re-tuning, timing).",
    )
    worker_reused: bool | None = Field(
        default=None, description="Whether a warm worker (imports done, CUDA up) served it; None: unknown."
    )
    isolation: str = Field(
        default="", description="'full' (bubblewrap's sandbox) or 'reduced: why' (docs/anticheat.md)."
    )
    log_tail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == Status.ACCEPTED


class Candidate(BaseModel):
    """A kernel source and where it came from."""

    source: str
    proposer: str
    stage: str
    parent_id: int | None = None
    label: str = ""
    prompt_id: int | None = None
    reply_id: int | None = None


# ncu metrics in the seed prompt's form: kernel name -> one dict of metric name -> value per profiled launch.
NcuMetrics = dict[str, list[dict[str, float | int | str]]]


class ProfileRecord(BaseModel):
    """One candidate's profile as the store keeps it (a failed profile has `error` and no metrics)."""

    candidate_id: int
    ok: bool
    error: str | None = None
    metric_set: str
    report_path: str | None = None
    metrics: NcuMetrics | None = None
    rules: list[str] = Field(default_factory=list, description="ncu's findings, most important first.")
    provenance: dict[str, Any] = Field(default_factory=dict, description="How the profile was taken.")

    def columns(self) -> dict[str, Any]:
        """The row's columns but the candidate's id (JSON text where the store keeps JSON)."""
        return {
            "ok": int(self.ok),
            "error": self.error,
            "metric_set": self.metric_set,
            "report_path": self.report_path,
            "metrics": json.dumps(self.metrics) if self.metrics is not None else None,
            "rules": json.dumps(self.rules),
            "provenance": json.dumps(self.provenance, default=str),
        }
