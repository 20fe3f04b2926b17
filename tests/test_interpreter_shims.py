"""The interpreter shims (agent/evaluation/interpreter_shims.py), one test each, run in this process under
Triton's CPU interpreter; and the verdict of what still cannot run there."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.language.extra.cuda import libdevice as cuda_libdevice

from agent.evaluation import interpreter_shims, triton_hooks
from agent.evaluation.verdicts import CPU_RULE, candidate_line, classify, describe
from agent.prompt.gpus import TARGET_ENV, target_gpu
from agent.records import Status

pytestmark = pytest.mark.skipif(not triton_hooks.interpreting(), reason="the shims are for the interpreter")
triton_hooks.install()


@triton.jit
def _generic_math(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(out_ptr + offs, libdevice.rsqrt(x), mask=offs < n)
    tl.store(out_ptr + n + offs, libdevice.tanh(x), mask=offs < n)
    tl.store(out_ptr + 2 * n + offs, libdevice.erf(x), mask=offs < n)
    tl.store(out_ptr + 3 * n + offs, libdevice.exp2(x), mask=offs < n)
    tl.store(out_ptr + 4 * n + offs, libdevice.pow(x, 3.0), mask=offs < n)


@triton.jit
def _cuda_math(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(out_ptr + offs, cuda_libdevice.fast_expf(x), mask=offs < n)
    tl.store(out_ptr + n + offs, tl.extra.cuda.libdevice.tanh(x), mask=offs < n)
    tl.store(out_ptr + 2 * n + offs, cuda_libdevice.isnan(x).to(tl.float32), mask=offs < n)


def test_libdevice_math_matches_torch():
    x = torch.rand(20) + 0.1
    out = torch.empty(5 * 20)
    _generic_math[(1,)](x, out, 20, BLOCK=32)
    want = torch.cat([torch.rsqrt(x), torch.tanh(x), torch.erf(x), torch.exp2(x), x**3])
    torch.testing.assert_close(out, want)


def test_cuda_libdevice_fast_math_and_int_results():
    x = torch.rand(20)
    x[3] = float("nan")
    out = torch.empty(3 * 20)
    _cuda_math[(1,)](x, out, 20, BLOCK=32)
    torch.testing.assert_close(out[:20], torch.exp(x), equal_nan=True)
    torch.testing.assert_close(out[20:40], torch.tanh(x), equal_nan=True)
    assert out[40:].tolist() == [1.0 if i == 3 else 0.0 for i in range(20)]


def test_unknown_libdevice_function_is_an_interpreter_limit():
    with pytest.raises(interpreter_shims.InterpreterLimit, match="no CPU equivalent"):
        interpreter_shims._lookup("__nv_byte_perm", interpreter_shims._TABLE)
    assert interpreter_shims.libdevice_name("__nv_fmaf_rn") == "fmaf"
    assert (
        interpreter_shims._lookup("__nv_fmaf_rn", interpreter_shims._TABLE) is interpreter_shims._TABLE["fma"]
    )


@triton.jit
def _scaled(x_ptr, out_ptr, n, eps, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    e = eps.to(tl.float32)
    tl.store(out_ptr + offs, x + e, mask=offs < n)


def test_float_scalar_argument_has_to():
    x, out = torch.zeros(8), torch.empty(8)
    _scaled[(1,)](x, out, 8, 0.25, BLOCK=8)
    assert out.tolist() == [0.25] * 8


def test_driver_answers_with_the_target_gpu(monkeypatch):
    active = triton.runtime.driver.active
    props = active.utils.get_device_properties(active.get_current_device())
    assert props["multiprocessor_count"] == 132  # the H200 of agent/data/gpus.toml
    assert props["max_shared_mem"] > 0 and props["warpSize"] == 32
    assert active.get_current_target().arch == 90
    assert active.get_active_torch_device() == torch.device("cpu")
    monkeypatch.setenv(TARGET_ENV, "4090")
    other = interpreter_shims.TargetDriver(target_gpu())
    assert other.utils.get_device_properties(0)["multiprocessor_count"] == 128
    assert other.get_current_target().arch == 89


@triton.heuristics({"EVEN": lambda args: args["n"] % args["BLOCK"] == 0})
@triton.jit
def _heuristic(x_ptr, n, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    if EVEN:
        tl.store(x_ptr + offs, tl.full((BLOCK,), 1.0, tl.float32))
    else:
        tl.store(x_ptr + offs, tl.full((BLOCK,), 2.0, tl.float32), mask=offs < n)


def test_heuristics_run():
    x = torch.zeros(8)
    _heuristic[(1,)](x, 8, BLOCK=8)
    assert x.tolist() == [1.0] * 8
    _heuristic[(1,)](x, 5, BLOCK=8)
    assert x.tolist() == [2.0] * 5 + [1.0] * 3


@triton.jit
def _asm(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    y = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)
    tl.store(x_ptr + offs, y)


def test_what_cannot_run_is_undecided_and_points_at_the_kernel_line():
    with pytest.raises(Exception) as info:
        _asm[(1,)](torch.zeros(4), BLOCK=4)
    status, rule = classify(info.value)
    assert rule == CPU_RULE and status == Status.UNDECIDED
    _line, name, text = candidate_line(info.value, __file__)  # type: ignore[misc]
    assert name == "_asm" and "inline_asm_elementwise" in text
    assert "inline_asm_elementwise" in describe(info.value, __file__)


def test_a_kernel_error_points_at_the_kernel_line_not_the_launch():
    with pytest.raises(Exception) as info:
        _scaled[(1,)](torch.zeros(8), torch.empty(8), 8, "not a number", BLOCK=8)
    status, rule = classify(info.value)
    assert rule is None and status.value == "crashed"
    assert candidate_line(info.value, __file__)[1] == "_scaled"  # type: ignore[index]


def test_libdevice_work_is_not_torch_work_of_the_candidate():
    """The shim computes with torch; the run-time guards must see none of it (the GPU does it in-kernel)."""
    from torch.overrides import TorchFunctionMode

    seen: list[str] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    x, out = torch.rand(20) + 0.1, torch.empty(5 * 20)
    with Watch():
        _generic_math[(1,)](x, out, 20, BLOCK=32)
    assert not {"rsqrt", "tanh", "erf", "exp2", "pow", "numpy"} & set(seen)
