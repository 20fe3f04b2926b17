"""The program ncu runs: `python -m agent.profiling.target REQUEST.json`, started by `agent.profiling.ncu`.

One process profiles several candidates, so process start, imports and the inputs are paid once. The
reference inputs are built once on the GPU. Each candidate i is imported, its autotuned kernels are
pinned to the config the timing run chose (configs chosen under ncu change from run to run, and tuning
inside the profiled range would profile every config), it is warmed up outside any NVTX range, and then
called once inside the NVTX range `ncu_agent_c<i>`, which is all ncu profiles (`--nvtx-include`).

A candidate that fails is reported on stderr with its index (and in `status_path` when given) and
skipped; the others are still profiled.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.evaluation import triton_hooks
from agent.evaluation.candidate import load_candidate
from agent.problem import build, default_device, load_reference
from agent.profiling.read import RANGE_PREFIX
from agent.records import ProblemSpec

WARMUP_CALLS = 2


class ProfileCandidate(BaseModel):
    source: str
    pinned_configs: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per autotuned kernel, the config of the timing run: its kwargs, num_warps, num_stages.",
    )


class ProfileRequest(BaseModel):
    problem: ProblemSpec
    candidates: list[ProfileCandidate]
    seed: int = 0
    status_path: Path | None = Field(default=None, description="Where to write the CandidateStatus.")
    device: str = Field(
        default="cuda", description="'cpu' (Triton's interpreter, no NVTX) is for tests only."
    )
    small: bool = Field(default=False, description="Use the problem's small shapes (tests).")


class CandidateStatus(BaseModel):
    """What became of each candidate in the profiling process."""

    errors: dict[int, str] = Field(default_factory=dict)
    profiled: list[int] = Field(default_factory=list)
    notes: dict[int, list[str]] = Field(default_factory=dict)
    ran_configs: dict[int, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="Per candidate, the config each autotuned kernel ran in the range."
    )


def _describe(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {str(e)[:1000]}{where}"


def _matching_config(tuner: Any, pinned: dict[str, Any]) -> Any:
    """The tuner's own Config equal to `pinned` (keeps its pre_hook, maxnreg...), else a new one."""
    import triton

    kwargs = {k: v for k, v in pinned.items() if k not in ("num_warps", "num_stages")}
    for config in tuner.configs:
        if (
            config.kwargs == kwargs
            and config.num_warps == pinned.get("num_warps", config.num_warps)
            and config.num_stages == pinned.get("num_stages", config.num_stages)
        ):
            return config
    return triton.Config(kwargs, num_warps=pinned.get("num_warps", 4), num_stages=pinned.get("num_stages", 3))


def pin_configs(tuners: list[Any], pinned: dict[str, dict[str, Any]]) -> list[str]:
    """Give each autotuner named in `pinned` that single config, so nothing is tuned; notes what happened."""
    notes: list[str] = []
    for tuner in tuners:
        name = getattr(tuner, "base_fn", tuner.fn).__name__
        if name not in pinned:
            notes.append(f"autotuned kernel {name} has no pinned config: it is tuned during the warm-up")
            continue
        config = _matching_config(tuner, pinned[name])
        if config not in tuner.configs:
            notes.append(f"pinned config of {name} is not among its configs; running it anyway")
        tuner.configs = [config]
        getattr(tuner, "cache", {}).clear()
    return notes


def _build_model(cand: Any, ref_module: Any, reference: Any, seed: int, device: str) -> Any:
    import torch

    torch.manual_seed(seed)
    with default_device(device):
        model = cand.ModelNew(*ref_module.get_init_inputs())
    model = model.to(device)
    ref_sd, new_sd = reference.state_dict(), model.state_dict()
    if ref_sd and ref_sd.keys() == new_sd.keys() and all(ref_sd[k].shape == new_sd[k].shape for k in ref_sd):
        model.load_state_dict(ref_sd)  # same weights as the timing run saw
    return model


@dataclass
class _Setup:
    """What every candidate shares: the reference module, its model and inputs (built once)."""

    ref_module: Any
    reference: Any
    inputs: list[Any]
    seed: int
    device: str


def _ran_configs(tuners: list[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tuner in tuners:
        best = getattr(tuner, "best_config", None)
        if best is not None:
            name = getattr(tuner, "base_fn", tuner.fn).__name__
            out[name] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
    return out


def profile_one(index: int, cand: ProfileCandidate, setup: _Setup, workdir: Path) -> CandidateStatus:
    """Import, pin, warm up, then one call inside the candidate's NVTX range."""
    import torch

    before = len(triton_hooks.STATE.autotuners)
    module = load_candidate(cand.source, workdir)
    tuners = triton_hooks.STATE.autotuners[before:]
    notes = pin_configs(tuners, cand.pinned_configs)
    model = _build_model(module, setup.ref_module, setup.reference, setup.seed, setup.device)
    cuda = setup.device == "cuda"
    with torch.no_grad():
        for _ in range(WARMUP_CALLS):  # JIT compile (and any tuning left) outside the profiled range
            model(*setup.inputs)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.nvtx.range_push(f"{RANGE_PREFIX}{index}")
        try:
            model(*setup.inputs)
            if cuda:
                torch.cuda.synchronize()
        finally:
            if cuda:
                torch.cuda.nvtx.range_pop()
    return CandidateStatus(
        profiled=[index], notes={index: notes} if notes else {}, ran_configs={index: _ran_configs(tuners)}
    )


def run(req: ProfileRequest) -> CandidateStatus:
    triton_hooks.install()  # before any candidate is imported, so its autotuners are seen
    ref_module = load_reference(req.problem, small=req.small)
    reference, inputs = build(ref_module, req.problem.reference_path, req.device, req.seed)  # once for all
    setup = _Setup(
        ref_module=ref_module, reference=reference, inputs=inputs, seed=req.seed, device=req.device
    )
    status = CandidateStatus()
    with tempfile.TemporaryDirectory(prefix="ncu_agent_profile_") as tmp:
        for i, cand in enumerate(req.candidates):
            try:
                one = profile_one(i, cand, setup, Path(tmp))
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # SystemExit from a candidate too: the others still get profiled
                status.errors[i] = _describe(e)
                # A sticky CUDA error (illegal address) fails the candidates after it too, each reported.
                print(f"ncu_agent: candidate {i} failed: {status.errors[i]}", file=sys.stderr, flush=True)
                continue
            status.profiled += one.profiled
            status.notes.update(one.notes)
            status.ran_configs.update(one.ran_configs)
            for note in one.notes.get(i, []):
                print(f"ncu_agent: candidate {i}: {note}", file=sys.stderr, flush=True)
    return status


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m agent.profiling.target REQUEST.json", file=sys.stderr)
        return 2
    req = ProfileRequest.model_validate_json(Path(argv[0]).read_text())
    try:
        status = run(req)
    except Exception as e:
        print(f"ncu_agent: setup failed: {_describe(e)}", file=sys.stderr, flush=True)
        status = CandidateStatus(
            errors={i: f"setup failed: {_describe(e)}" for i in range(len(req.candidates))}
        )
    if req.status_path is not None:
        req.status_path.write_text(status.model_dump_json())
    return 0 if status.profiled else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
