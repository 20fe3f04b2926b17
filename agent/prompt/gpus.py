"""GPU specs (agent/data/gpus.toml) and finding the one a run targets: by name, or by asking torch."""

from __future__ import annotations

import os
import re
import tomllib
from functools import cache

from pydantic import BaseModel, ConfigDict, Field

from agent.data.paths import package_data


class UnknownGpuError(ValueError):
    """A GPU name that matches no entry (or several) of the spec table."""


class GpuSpec(BaseModel):
    """Datasheet numbers of one GPU. A field is None when it is not known (a GPU missing from the table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Name shown in prompts ('4090', 'H100').")
    full_name: str | None = Field(default=None, description="What torch.cuda.get_device_name() reports.")
    aliases: tuple[str, ...] = ()
    architecture: str | None = None
    compute_capability: str | None = Field(default=None, description="'8.9', '9.0'.")
    sms: int | None = None
    memory_gb: float | None = None
    memory_bandwidth_gbps: float | None = Field(default=None, description="Datasheet peak, GB/s.")
    tf32_tflops: float | None = Field(default=None, description="Dense tensor-core TFLOPS.")
    bf16_tflops: float | None = None
    fp16_tflops: float | None = None
    max_registers_per_thread: int | None = None
    max_threads_per_block: int | None = None
    max_threads_per_sm: int | None = None
    warp_size: int | None = None
    max_warps_per_sm: int | None = None
    smem_per_sm_kb: float | None = None
    max_smem_per_block_kb: float | None = None
    l2_cache_mb: float | None = None
    from_table: bool = Field(default=True, description="False when built from the device's own properties.")


def _norm(name: str) -> str:
    """'NVIDIA GeForce RTX-4090' and 'nvidia geforce rtx 4090' compare equal."""
    return re.sub(r"[\s_\-]+", "", name).lower()


@cache
def load_gpus() -> tuple[GpuSpec, ...]:
    """Every GPU of the spec table, in file order."""
    with package_data("gpus.toml").open("rb") as f:
        table = tomllib.load(f)
    return tuple(GpuSpec.model_validate(entry) for entry in table.get("gpu", []))


def _keys(gpu: GpuSpec) -> set[str]:
    return {_norm(k) for k in (gpu.name, gpu.full_name, *gpu.aliases) if k}


def find_gpu(name: str) -> GpuSpec:
    """The table's GPU called `name`: an exact (case-, space- and dash-insensitive) name or alias, else the
    GPU whose longest alias occurs inside `name` (so 'NVIDIA A100-SXM4-40GB MIG 1g.5gb' finds the 40 GB A100,
    not the 80 GB one). A fragment of a name ('l40', 'a10') is not enough: those are other GPUs."""
    gpus = load_gpus()
    query = _norm(name)
    known = ", ".join(g.name for g in gpus)
    if not query:
        raise UnknownGpuError(f"empty GPU name; known GPUs: {known}")
    for gpu in gpus:
        if query in _keys(gpu):
            return gpu
    # Longest alias inside the query: device strings carry extra words ('NVIDIA H100 80GB HBM3').
    best: tuple[int, list[GpuSpec]] = (0, [])
    for gpu in gpus:
        length = max((len(k) for k in _keys(gpu) if k in query), default=0)
        if length > best[0]:
            best = (length, [gpu])
        elif length and length == best[0]:
            best[1].append(gpu)
    if len(best[1]) == 1:
        return best[1][0]
    if best[1]:
        names = ", ".join(g.name for g in best[1])
        raise UnknownGpuError(f"GPU name {name!r} is ambiguous: it matches {names}; known GPUs: {known}")
    raise UnknownGpuError(f"unknown GPU {name!r}; known GPUs: {known} (add it to agent/data/gpus.toml)")


def _spec_from_properties(props: object, device_name: str) -> GpuSpec:
    """A spec for a GPU missing from the table, from what the driver reports; the rest stays unknown."""

    def prop(attr: str) -> int | None:
        value = getattr(props, attr, None)
        return value if isinstance(value, int) and value > 0 else None

    major, minor = getattr(props, "major", None), getattr(props, "minor", None)
    warp = prop("warp_size")
    threads_sm = prop("max_threads_per_multi_processor")
    smem_sm, smem_block = prop("shared_memory_per_multiprocessor"), prop("shared_memory_per_block_optin")
    l2, total = prop("L2_cache_size"), prop("total_memory")
    return GpuSpec(
        name=device_name,
        full_name=device_name,
        compute_capability=f"{major}.{minor}" if major is not None and minor is not None else None,
        sms=prop("multi_processor_count"),
        memory_gb=round(total / 2**30, 1) if total else None,
        max_threads_per_block=prop("max_threads_per_block"),
        max_threads_per_sm=threads_sm,
        warp_size=warp,
        max_warps_per_sm=threads_sm // warp if threads_sm and warp else None,
        smem_per_sm_kb=smem_sm / 1024 if smem_sm else None,
        max_smem_per_block_kb=smem_block / 1024 if smem_block else None,
        l2_cache_mb=round(l2 / 2**20, 1) if l2 else None,
        from_table=False,
    )


def detect_gpu(device: int = 0) -> GpuSpec | None:
    """The spec of CUDA device `device`, or None when there is no usable GPU."""
    import torch

    try:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name(device)
    except (RuntimeError, AssertionError, AttributeError):  # broken driver, CPU-only build
        return None
    try:
        return find_gpu(device_name)
    except UnknownGpuError:
        return _spec_from_properties(torch.cuda.get_device_properties(device), device_name)


def resolve_gpu(override: str | None = None) -> GpuSpec | None:
    """The GPU named by the user if any (an unknown name is an error), else the one present, else None."""
    if override:
        return find_gpu(override)
    return detect_gpu()


TARGET_ENV = "NCU_AGENT_TARGET_GPU"  # set by a run (agent/commands/run_setup.py) for its CPU workers


def target_gpu() -> GpuSpec:
    """The GPU a run targets, for code that stands in for it on the CPU (Triton's driver queries there)."""
    return find_gpu(os.environ.get(TARGET_ENV) or "h200")
