"""The GPU spec table and finding a GPU by name or on the machine."""

from __future__ import annotations

import types

import pytest
import torch

from agent.prompt import gpus
from agent.prompt.gpus import GpuSpec, UnknownGpuError, detect_gpu, find_gpu, load_gpus, resolve_gpu

SEED_4090 = {
    "architecture": "Ada Lovelace",
    "compute_capability": "8.9",
    "sms": 128,
    "memory_bandwidth_gbps": 1008,
    "tf32_tflops": 82.6,
    "bf16_tflops": 165.2,
    "fp16_tflops": 165.2,
    "max_registers_per_thread": 255,
    "max_threads_per_block": 1024,
    "max_threads_per_sm": 1536,
    "warp_size": 32,
    "max_warps_per_sm": 48,
    "smem_per_sm_kb": 100,
    "max_smem_per_block_kb": 99,
    "l2_cache_mb": 72,
}


def test_table_loads_with_every_field_known():
    table = load_gpus()
    names = {g.name for g in table}
    assert {"4090", "A100", "H100", "H200", "L40S"} <= names
    assert len(names) == len(table)
    for gpu in table:
        assert gpu.from_table
        for field, value in gpu.model_dump().items():
            assert value is not None, f"{gpu.name}: {field} is missing"
        assert gpu.max_warps_per_sm * gpu.warp_size == gpu.max_threads_per_sm
        assert gpu.max_smem_per_block_kb <= gpu.smem_per_sm_kb


def test_4090_matches_the_seed_prompt():
    gpu = find_gpu("4090")
    assert gpu.name == "4090"
    for field, value in SEED_4090.items():
        assert getattr(gpu, field) == value, field


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("4090", "4090"),
        ("RTX4090", "4090"),
        ("rtx 4090", "4090"),
        ("NVIDIA GeForce RTX 4090", "4090"),
        ("h200", "H200"),
        ("NVIDIA H200", "H200"),
        ("H100", "H100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("a100", "A100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA L40S", "L40S"),
        ("l40s", "L40S"),
        # device strings with extra words: the longest alias inside wins
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "A100 40GB"),
        ("NVIDIA H100 PCIe 80GB", "H100 PCIe"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "H100"),
    ],
)
def test_aliases_and_device_names(query, expected):
    assert find_gpu(query).name == expected


def test_unknown_name_lists_known_gpus():
    with pytest.raises(UnknownGpuError) as info:
        find_gpu("Voodoo 5500")
    message = str(info.value)
    assert "Voodoo 5500" in message
    for name in ("4090", "A100", "H100", "H200", "L40S"):
        assert name in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("fragment", ["a10", "l40", "rtx", "h1"])
def test_a_fragment_is_not_a_match(fragment):
    # A10, L40, RTX 4080... are other GPUs with other numbers: better an error than a wrong spec.
    with pytest.raises(UnknownGpuError, match="unknown GPU"):
        find_gpu(fragment)


def test_empty_name_is_an_error():
    with pytest.raises(UnknownGpuError):
        find_gpu("  ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_detect_returns_none_without_a_gpu():
    assert detect_gpu() is None
    assert resolve_gpu(None) is None


def test_resolve_prefers_the_override():
    assert resolve_gpu("h200").name == "H200"
    with pytest.raises(UnknownGpuError):
        resolve_gpu("no such gpu")


def test_detect_finds_a_known_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=0: "NVIDIA H200")
    assert detect_gpu().name == "H200"
    assert resolve_gpu(None).name == "H200"
    assert resolve_gpu("4090").name == "4090"


def test_detect_builds_a_spec_for_an_unknown_gpu(monkeypatch):
    props = types.SimpleNamespace(
        name="NVIDIA Future GPU",
        major=12,
        minor=0,
        multi_processor_count=170,
        total_memory=96 * 2**30,
        max_threads_per_multi_processor=1536,
        warp_size=32,
        L2_cache_size=128 * 2**20,
        shared_memory_per_multiprocessor=100 * 1024,
        shared_memory_per_block_optin=99 * 1024,
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=0: props.name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=0: props, raising=False)
    gpu = detect_gpu()
    assert isinstance(gpu, GpuSpec)
    assert not gpu.from_table
    assert gpu.name == "NVIDIA Future GPU"
    assert gpu.compute_capability == "12.0"
    assert gpu.sms == 170
    assert gpu.max_warps_per_sm == 48
    assert gpu.smem_per_sm_kb == 100
    assert gpu.max_smem_per_block_kb == 99
    assert gpu.l2_cache_mb == 128
    assert gpu.memory_gb == 96
    # Not reported by the driver: unknown, not invented.
    assert gpu.architecture is None
    assert gpu.memory_bandwidth_gbps is None
    assert gpu.tf32_tflops is None
    assert gpu.max_threads_per_block is None


def test_detect_survives_a_broken_driver(monkeypatch):
    def broken(device=0):
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", broken)
    assert detect_gpu() is None


def test_table_is_data(monkeypatch, tmp_path):
    (tmp_path / "gpus.toml").write_text('[[gpu]]\nname = "X1"\naliases = ["x-one"]\nsms = 4\n')
    monkeypatch.setattr(gpus, "package_data", lambda name: tmp_path / name)
    gpus.load_gpus.cache_clear()
    try:
        assert find_gpu("X ONE").sms == 4
    finally:
        gpus.load_gpus.cache_clear()
